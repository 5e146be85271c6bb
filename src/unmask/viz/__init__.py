"""Views of the reveal order: which denoiser call revealed each token."""

from .html import write_reveal_html
from .png import plot_reveal_order
from .terminal import EOS_GLYPH, call_colors, render_reveal, reveal_legend, reveal_text, token_pieces

__all__ = [
    "EOS_GLYPH", "call_colors", "plot_reveal_order", "render_reveal", "reveal_legend", "reveal_text", "token_pieces",
    "write_reveal_html",
]
