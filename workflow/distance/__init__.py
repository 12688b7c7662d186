"""Per-object distance from monocular images (MOTSynth; DisNet and Zhu & Fang baselines)."""
