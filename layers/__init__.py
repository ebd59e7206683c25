"""Everything stored: schema, migrations, the local cluster, loaders and queries."""
