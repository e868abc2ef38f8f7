"""The image pipeline: the create service, the actor and its retry middleware."""
