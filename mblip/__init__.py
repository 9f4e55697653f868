"""mblip: reproducible mBLIP (Geigle et al., arXiv 2307.06930).

Re-align BLIP-2's English-aligned Q-Former to a multilingual LLM on machine-translated data; from an offline
demo world on 2 CPU cores to the paper's presets on GPUs, with one code path. See README.md.
"""
__version__ = "0.1.0"
