"""v1twin."""
