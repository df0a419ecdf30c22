"""CPT-V Studio's headless core: models, data, fake quantization, the scale search, scale files.

Never imports Qt, pyqtgraph or the app (tests/test_house_rule.py enforces it).
"""
__version__ = "0.1.0"
