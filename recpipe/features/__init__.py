"""Id maps, context and content features, feature hashing, model inputs."""
