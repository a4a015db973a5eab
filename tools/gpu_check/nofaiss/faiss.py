# Dry-run shim: the GPU machine has no faiss; any import of it here fails as it would there.
raise ImportError("faiss is not installed on the GPU machine (dry-run shim)")
