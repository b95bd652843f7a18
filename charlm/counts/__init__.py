"""Counting beside the network: an unbounded n-gram of the training text and of the text being read, mixed in."""
