"""The maps: the paper's class activation and gradient maps (eqs. 1-4), the attention family, and Integrated
Gradients."""
