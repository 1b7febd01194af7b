"""The Pareto dashboard's HTML template.

A package (not a plain folder) only so that ``pareto_dashboard.html`` installs with archsearch
as package data and ``archsearch.dashboard`` finds it with ``importlib.resources`` in any
install, editable or wheel.
"""
