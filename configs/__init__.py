"""The shipped configs; setup.py installs this folder as the package `retinamask_d2.configs`."""
