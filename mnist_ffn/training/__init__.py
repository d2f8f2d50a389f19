"""Training one network: the model, the lesson's forward and backward passes (by hand, and autograd's), SGD,
augmentation, the loop, its checkpoints and run folder, and what a split scores."""
