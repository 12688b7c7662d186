"""Multi-scale MIL on whole-slide images (Camelyon16 / TCGA; DAS-MIL and MIL baselines)."""
