"""`featurestream serve`: SageMaker Feature Store's runtime and feature-group APIs over HTTP,
so unmodified AWS SDK clients (boto3, the Java/JS/Go SDKs) work against featurestream."""
