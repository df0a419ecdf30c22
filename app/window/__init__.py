"""The main window: the run view, the log, the menus and their actions (file, export, library and sweeps)."""
