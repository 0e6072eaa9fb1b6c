"""How good the explanations are: localisation, granularity and faithfulness against ground
truth (`chexplain evaluate`), and agreement between two runs of a graph (parity, fidelity)."""
