"""The run view: the run panel (settings), the controls, the results card and the live plots, all drawn
from a RunState the engine's search events fold into."""
