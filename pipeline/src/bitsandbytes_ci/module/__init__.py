"""The Dagger module: `main.BitsandbytesCi` holds the functions `dagger call` lists; `stages/` holds
the container recipes each function runs its step programs in. Never imports the host executor."""
