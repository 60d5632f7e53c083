"""The shop's own tables, made by `tide db migrate` in file order, after Tide's."""
