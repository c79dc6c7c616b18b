"""Cliffs: the cliff test and the estimators around it (`stats`), the token taxonomy (`taxonomy`), the
streaming scan that finds cliffs per trace (`find`) and the cliffs the experiments use (`select`)."""
