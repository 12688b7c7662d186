"""Green-list LLM watermark (Kirchenbauer et al., ICML 2023): seeding, bias, detection."""
