"""Fine-tuning (paper §3.2), prediction, and the comparison of Table 2 with significance tests."""
