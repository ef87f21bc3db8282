"""Boards: what a row must be to be published (admission), the ranked headline table, the leaderboard's CSVs and
Markdown, its figures and its web page. Reading or publishing a board imports no attack library and no harness."""
