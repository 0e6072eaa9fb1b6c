"""The rule-based backward graph: the Grad-CAM family and LRP as plain forward operators."""

from ..errors import UnsupportedOperator
from .cam import VARIANTS
from .composites import COMPOSITES, Composite, make_composite
from .explainer import LRP, Explainer, GradCAM
from .graph import trace

__all__ = ["COMPOSITES", "VARIANTS", "Composite", "Explainer", "GradCAM", "LRP", "UnsupportedOperator", "make_composite", "trace"]
