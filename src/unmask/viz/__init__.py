"""Views of the reveal order: which denoiser call revealed each token."""

from .terminal import call_colors, render_reveal, reveal_legend, reveal_text, token_pieces

__all__ = ["call_colors", "render_reveal", "reveal_legend", "reveal_text", "token_pieces"]
