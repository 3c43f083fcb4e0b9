"""Run CKAN's own command line (`ckan -c ckan.ini ...`) with ONE change: search indexing is switched off.

Run with the CKAN service's Python (`.services/ckan/bin/python tests/ckan_nosolr.py -c ckan.ini run ...`), never with
the project's. Why: CKAN indexes every dataset into Solr synchronously inside package_create/update/delete, and Solr
is on no package registry this project can reach. Everything else is stock CKAN (PostgreSQL, the Action API, auth,
API tokens, validation, file uploads): the publisher is tested against that.

What is changed, and nothing more:
- `ckan.lib.search` gets a no-op package index (CKAN's own `NoopSearchIndex`) instead of the Solr one, so writes do
  not try to reach Solr;
- the package query (what package_search asks Solr) answers "no results" as an empty index would, and its
  `get_index` (the Solr cache that package_show tries first) raises SearchError, which package_show already handles
  by reading the dataset from the database;
- `search.is_available` answers False, so the start-up Solr schema check is skipped with CKAN's own warning.
Consequence: package_search finds nothing here (as with an empty index; CKAN itself calls it e.g. to count an
organization's datasets); the publisher never relies on it (it finds datasets by their deterministic name with
package_show).
"""
import sys

import ckan.lib.search as search
from ckan.lib.search.index import NoopSearchIndex
from ckan.lib.search.query import PackageSearchQuery


class EmptyPackageSearchQuery(PackageSearchQuery):
    """The answers of an empty index."""

    def get_all_entity_ids(self, max_results=1000):
        return []

    def get_index(self, reference):
        raise search.SearchError("search indexing is disabled in this test instance (no Solr)")

    def run(self, query, permission_labels=None, **kwargs):
        self.count, self.results, self.facets = 0, [], {}
        return {"results": [], "count": 0}


search._INDICES["package"] = NoopSearchIndex
search._QUERIES["package"] = EmptyPackageSearchQuery
search.PackageSearchQuery = EmptyPackageSearchQuery  # model_dictize builds one directly to count a group's datasets
search.is_available = lambda: False

if __name__ == "__main__":
    from ckan.cli.cli import ckan

    sys.argv[0] = "ckan"
    sys.exit(ckan())
