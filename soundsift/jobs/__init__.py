"""Work over many files: the batch job (local and Ray) and the evaluation harness."""
