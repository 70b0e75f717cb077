"""The shared core of both executors: the support matrix and the tree's settings as validated data
(read from the matrix file and the tree's own files), the plan (jobs, wheels, expectations), CI
shards, listings, job results and the run summary. It runs nothing and imports neither the host
executor nor the Dagger module."""
