//! Authentication, authorization, the cluster CA, bootstrap tokens, cluster-info, CSR
//! signing and service-account tokens of the API test server.
