"""HTTP plumbing shared by every domain's endpoints: dependencies, paging, ETags, middleware."""
