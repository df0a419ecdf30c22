"""Pieces shared by the run view and the library: the plots' common look, the Save PNG / CSV card, and
a window's first size on the screen it starts on."""
