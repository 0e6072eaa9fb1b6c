"""The rule-based backward graph: the Grad-CAM family and LRP as plain forward operators."""
