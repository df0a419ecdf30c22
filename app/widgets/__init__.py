"""Plot pieces shared by the run view and the library: the common look and the Save PNG / CSV card."""
