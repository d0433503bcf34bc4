"""Free checks and estimates before any money is spent: model lookups, token counts, cost ranges."""
