"""The classification path: decoding, features, labels and prompts, scoring, and Classifier."""
