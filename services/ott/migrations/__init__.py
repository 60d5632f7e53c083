"""The reference platform's tables: `tide db migrate` applies these after Tide's own."""
