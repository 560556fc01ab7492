"""The command line: `tsptq` and `tsptq-deploy`; nothing below this package imports it."""
