"""`llmbench history`: result documents kept run after run in one SQLite file (`store`), and
change-point detection over their series (`changepoint`, `check`)."""
