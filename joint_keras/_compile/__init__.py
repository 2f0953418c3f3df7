"""What `compile()` is given, checked and standardized once: the
argument checks (`checks`) and the compile spec every later stage reads
(`spec`).
"""
