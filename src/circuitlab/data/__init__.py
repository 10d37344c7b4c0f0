"""The data layer: the Python corpus (files, split, manifest, hash), its BPE tokenizer, and corpus windows."""
