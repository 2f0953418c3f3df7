"""What a step logs: the loss trackers (`trackers`) and the submodels'
metrics (`submodel_metrics`).
"""
