"""Work off the GUI thread: ``Job`` runs long engine work of any kind (search, sweep, evaluate, export) in
a QThread; ``BackgroundCall`` runs short calls whose answer a view shows."""
