"""The activator: answers reads of state while the GPU worker sleeps, holds GPU
requests to Ollama while the worker starts, wakes a worker for GPU pods that
cannot be scheduled or on `POST /hybrid-llm/wake`, and reports work so the
scaler never stops a worker that is in use. Run it as `python -m activator`.

Environment (a malformed value stops it at start: one line on stderr, exit 2):
  ACTIVATOR_BACKEND        Ollama's URL, required (http://ollama.llm-inference.svc:11434)
  ACTIVATOR_INSTANCE_IDS   comma-separated EC2 instance ids of the workers, required;
                           the first serves the proxy; no other instance is ever started
  ACTIVATOR_PORT           port to listen on (11434)
  ACTIVATOR_HOST           address to listen on (0.0.0.0)
  ACTIVATOR_HOLD_SECONDS   how long a request is held while the worker starts (480)
  ACTIVATOR_MAX_HELD       requests held at once; past it 503 at once (256)
  ACTIVATOR_FIRST_BYTE_SECONDS   how long a GPU request may wait for Ollama's first
                           byte (600): a model load plus a whole non-streamed answer
  ACTIVATOR_STREAM_IDLE_SECONDS  how long a started answer may send nothing (120)
  ACTIVATOR_SHUTDOWN_SECONDS  at SIGTERM, how long answers in flight may go on (50)
  ACTIVATOR_RESTART_CHECK_SECONDS  while requests are held, how often the worker's EC2
                           state is read to start it again if it stopped (15)
  ACTIVATOR_MODELS         comma-separated models the stack pulls (none): the model
                           lists answered while the worker sleeps
  ACTIVATOR_OLLAMA_VERSION what /api/version answers while the worker sleeps, before
                           Ollama's own answer was seen (0.0.0)
  ACTIVATOR_WATCH_PODS     true/false: watch for unschedulable GPU pods (true);
                           needs in-cluster credentials (KUBERNETES_SERVICE_HOST/PORT and
                           the service account) or a kubeconfig (KUBECONFIG, else
                           ~/.kube/config), checked at start: unusable ones are exit 2
  ACTIVATOR_CLUSTER_IDS    Liqo cluster id of each worker, same order (none): maps a pod
                           that selects `liqo.io/remote-cluster-id` to its worker
  ACTIVATOR_VIRTUAL_NODES  virtual node name of each worker, same order (the cluster
                           ids): maps a pod that selects a node by name to its worker
  ACTIVATOR_METRIC_NAMESPACE  CloudWatch namespace of the Activity metric (HybridLLM)
  ACTIVATOR_POLL_SECONDS   how often a hold probes GET /api/version (2)
  ACTIVATOR_CONNECT_TIMEOUT  connect timeout to the backend, its only timeout (5)
  ACTIVATOR_POD_COOLDOWN_SECONDS  after a pod woke a worker, other pods do not wake it
                           again for this long (600)
Numbers are ASCII digits (seconds may have a fraction or exponent), finite and more
than 0; ACTIVATOR_BACKEND is http(s)://host[:port] with no path, query, fragment or
user info; ACTIVATOR_HOST is an IP address or a hostname.
AWS settings are boto3's own (AWS_REGION, credentials, AWS_ENDPOINT_URL).
"""
