"""What charlm keeps on disk: the training state, checkpoints, run folders, model folders, output targets."""
