"""The OAuth providers: the token and authorization endpoints, and what each provider says when it refuses."""
