"""What is written to and read from files: `.keras` and weights files,
atomically (`saving`), and the configs of submodels and their graph
(`serialization`).
"""
