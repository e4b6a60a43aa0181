output "resource_group_name" {
  description = "Resource group of every resource."
  value       = azurerm_resource_group.main.name
}

output "aks_cluster_name" {
  description = "AKS cluster (az aks get-credentials -g <resource group> -n <this>)."
  value       = azurerm_kubernetes_cluster.main.name
}

output "aks_oidc_issuer_url" {
  description = "OIDC issuer of the cluster's service account tokens."
  value       = azurerm_kubernetes_cluster.main.oidc_issuer_url
}

output "acr_login_server" {
  description = "Registry to push the campaign-express image to (the cluster pulls with AcrPull)."
  value       = azurerm_container_registry.main.login_server
}

output "key_vault_name" {
  description = "Key Vault holding the platform's secrets."
  value       = azurerm_key_vault.main.name
}

output "key_vault_uri" {
  description = "vaultUrl of the External Secrets SecretStore."
  value       = azurerm_key_vault.main.vault_uri
}

output "key_vault_secret_names" {
  description = "Secrets written to Key Vault, for the ExternalSecret resources."
  value       = sort([for secret in azurerm_key_vault_secret.platform : secret.name])
}

output "tenant_id" {
  description = "Tenant of the Key Vault (the SecretStore's tenantId)."
  value       = data.azurerm_client_config.current.tenant_id
}

output "external_secrets_client_id" {
  description = "Client id for the annotation azure.workload.identity/client-id on the External Secrets service account."
  value       = azurerm_user_assigned_identity.external_secrets.client_id
}

output "postgres_fqdn" {
  description = "PostgreSQL flexible server host (private)."
  value       = azurerm_postgresql_flexible_server.main.fqdn
}

output "redis_hostname" {
  description = "Redis host (TLS on redis_ssl_port)."
  value       = azurerm_redis_cache.main.hostname
}

output "redis_ssl_port" {
  description = "Redis TLS port."
  value       = azurerm_redis_cache.main.ssl_port
}

output "clickhouse_disk_ids" {
  description = "Managed disk ids for the ClickHouse PersistentVolumes (volumeHandle), in server order."
  value       = azurerm_managed_disk.clickhouse[*].id
}

output "log_analytics_workspace_id" {
  description = "Log Analytics workspace of the cluster's Container Insights."
  value       = azurerm_log_analytics_workspace.main.id
}
