"""The Open Inference Protocol's gRPC messages and service, generated from grpc_predict_v2.proto
(README.md here says where it comes from and how to regenerate the stubs)."""
