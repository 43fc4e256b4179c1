"""See the Transformer work: every number of one forward pass, as tables, heatmaps and a report.

    from qkv.explain import trace
    t = trace(model, "hello", "olleh", src_tokenizer=tok, tgt_tokenizer=tok)
    t.attention("cross", layer=0).weights      # (H, T_tgt, T_src)
    e = explain_text(run, "hello")             # a loaded run's own output for a text, traced
"""

from qkv.explain.text import Explained, explain_text
from qkv.explain.trace import AttentionTrace, EmbeddingTrace, LayerTrace, Trace, trace

__all__ = ["trace", "Trace", "AttentionTrace", "EmbeddingTrace", "LayerTrace", "explain_text", "Explained"]
