"""The shared core of both executors: the support matrix and the tree's settings as validated data,
the plan (jobs, wheels, expectations), CI shards, listings, job results and the run summary. Pure
functions over data; it imports neither the host executor nor the Dagger module."""
