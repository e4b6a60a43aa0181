# Azure infrastructure for Campaign Express: AKS (system, bidding and ClickHouse pools), Redis
# Premium (clustered), PostgreSQL flexible server, container registry, Key Vault, Log Analytics
# and the ClickHouse data disks, on one virtual network. The platform itself is deployed onto the
# cluster with the kustomize trees in deploy/k8s and deploy/monitoring.
#
# The secrets the platform reads (Django secret key, database and ClickHouse URLs and account,
# Redis URL, Grafana admin password) are generated here and written to Key Vault; the External
# Secrets Operator reads them with the workload identity below (outputs: key_vault_uri,
# tenant_id, external_secrets_client_id). They are therefore also in the Terraform state.

locals {
  name    = "${var.project_name}-${var.environment}"
  compact = replace(var.project_name, "-", "")
  tags = merge({
    project     = var.project_name
    environment = var.environment
    managed-by  = "terraform"
  }, var.tags)
}

data "azurerm_client_config" "current" {}

# Globally unique names (registry, Key Vault, Redis, PostgreSQL) get a stable random suffix.
resource "random_string" "suffix" {
  length  = 6
  special = false
  upper   = false
}

resource "azurerm_resource_group" "main" {
  name     = "${local.name}-rg"
  location = var.primary_region
  tags     = local.tags
}

# --- Network ------------------------------------------------------------------------------

resource "azurerm_virtual_network" "main" {
  name                = "${local.name}-vnet"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = [var.vnet_address_space]
  tags                = local.tags
}

# Nodes and pods of the system and bidding pools (Azure CNI: one address per pod).
resource "azurerm_subnet" "aks" {
  name                 = "aks"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [cidrsubnet(var.vnet_address_space, 4, 0)]
}

# The ClickHouse pool's nodes and pods.
resource "azurerm_subnet" "clickhouse" {
  name                 = "clickhouse"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [cidrsubnet(var.vnet_address_space, 8, 16)]
}

# Redis Premium injected into the network (no public endpoint).
resource "azurerm_subnet" "redis" {
  name                 = "redis"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [cidrsubnet(var.vnet_address_space, 8, 17)]
}

resource "azurerm_subnet" "postgres" {
  name                 = "postgres"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [cidrsubnet(var.vnet_address_space, 8, 18)]
  service_endpoints    = ["Microsoft.Storage"]

  delegation {
    name = "postgres"
    service_delegation {
      name    = "Microsoft.DBforPostgreSQL/flexibleServers"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

# --- Monitoring -----------------------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "main" {
  name                = "${local.name}-logs"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

# --- Kubernetes -----------------------------------------------------------------------------

resource "azurerm_kubernetes_cluster" "main" {
  name                = "${local.name}-aks"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  dns_prefix          = local.name
  kubernetes_version  = var.kubernetes_version

  # Workload identity: pods exchange their service account token for an Azure token
  # (the External Secrets Operator reads Key Vault this way; no credential is stored).
  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  # Web, worker, the analytics sink and the monitoring stack run here.
  default_node_pool {
    name                        = "system"
    vm_size                     = var.system_vm_size
    node_count                  = var.system_node_count
    vnet_subnet_id              = azurerm_subnet.aks.id
    zones                       = ["1", "2", "3"]
    temporary_name_for_rotation = "systemtmp"
  }

  identity {
    type = "SystemAssigned"
  }

  # Azure network policy enforces deploy/k8s/base/networkpolicy.yaml.
  network_profile {
    network_plugin    = "azure"
    network_policy    = "azure"
    load_balancer_sku = "standard"
    service_cidr      = "10.41.0.0/16"
    dns_service_ip    = "10.41.0.10"
  }

  oms_agent {
    log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  }

  tags = local.tags
}

# Bidders: the production overlay selects these nodes by their labels (npu=xdna). The label
# states what the bidders' provider expects of the host; no Azure VM size carries an XDNA
# NPU, so on this pool set CAMPAIGN_EXPRESS__NPU__PROVIDER to a provider the VM has.
resource "azurerm_kubernetes_cluster_node_pool" "bidding" {
  name                  = "bidding"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.main.id
  vm_size               = var.bidding_vm_size
  vnet_subnet_id        = azurerm_subnet.aks.id
  zones                 = ["1", "2", "3"]
  auto_scaling_enabled  = true
  min_count             = var.bidding_min_count
  max_count             = var.bidding_max_count
  node_labels           = merge(var.bidding_node_labels, { workload = "bidding" })
  tags                  = local.tags
}

# ClickHouse servers: storage-optimized VMs in the zone of their data disks.
resource "azurerm_kubernetes_cluster_node_pool" "clickhouse" {
  name                  = "clickhouse"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.main.id
  vm_size               = var.clickhouse_vm_size
  node_count            = var.clickhouse_node_count
  vnet_subnet_id        = azurerm_subnet.clickhouse.id
  zones                 = [var.availability_zone]
  node_labels           = { workload = "clickhouse" }
  tags                  = local.tags
}

# One data disk per ClickHouse server, bound as a static PersistentVolume (disk ids in outputs).
resource "azurerm_managed_disk" "clickhouse" {
  count                = var.clickhouse_node_count
  name                 = "${local.name}-clickhouse-${count.index}"
  location             = azurerm_resource_group.main.location
  resource_group_name  = azurerm_resource_group.main.name
  storage_account_type = "PremiumV2_LRS"
  create_option        = "Empty"
  disk_size_gb         = var.clickhouse_disk_size_gb
  zone                 = var.availability_zone
  tags                 = local.tags
}

# The cluster attaches disks outside its node resource group only with rights on them.
resource "azurerm_role_assignment" "aks_clickhouse_disks" {
  count                = var.clickhouse_node_count
  scope                = azurerm_managed_disk.clickhouse[count.index].id
  role_definition_name = "Contributor"
  principal_id         = azurerm_kubernetes_cluster.main.identity[0].principal_id
}

# --- Container registry ---------------------------------------------------------------------

resource "azurerm_container_registry" "main" {
  name                = "${local.compact}${var.environment}${random_string.suffix.result}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "Premium"
  admin_enabled       = false

  dynamic "georeplications" {
    for_each = var.replica_regions
    content {
      location = georeplications.value
      tags     = local.tags
    }
  }

  tags = local.tags
}

resource "azurerm_role_assignment" "aks_acr_pull" {
  scope                            = azurerm_container_registry.main.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}

# --- Redis ----------------------------------------------------------------------------------

# Clustered Redis: the platform's keys are hash-tagged so each script stays in one slot.
resource "azurerm_redis_cache" "main" {
  name                          = "${local.name}-redis-${random_string.suffix.result}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  sku_name                      = "Premium"
  family                        = "P"
  capacity                      = var.redis_capacity
  shard_count                   = var.redis_shard_count
  subnet_id                     = azurerm_subnet.redis.id
  public_network_access_enabled = false
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"

  redis_configuration {
    maxmemory_policy = var.redis_maxmemory_policy
  }

  tags = local.tags
}

# --- PostgreSQL -----------------------------------------------------------------------------

resource "azurerm_private_dns_zone" "postgres" {
  name                = "${local.name}.postgres.database.azure.com"
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "postgres" {
  name                  = "${local.name}-postgres"
  private_dns_zone_name = azurerm_private_dns_zone.postgres.name
  virtual_network_id    = azurerm_virtual_network.main.id
  resource_group_name   = azurerm_resource_group.main.name
  tags                  = local.tags
}

resource "random_password" "postgres" {
  length  = 32
  special = false
}

resource "azurerm_postgresql_flexible_server" "main" {
  name                          = "${local.name}-pg-${random_string.suffix.result}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  version                       = var.postgres_version
  sku_name                      = var.postgres_sku_name
  storage_mb                    = var.postgres_storage_mb
  zone                          = var.availability_zone
  delegated_subnet_id           = azurerm_subnet.postgres.id
  private_dns_zone_id           = azurerm_private_dns_zone.postgres.id
  public_network_access_enabled = false
  administrator_login           = var.postgres_admin_login
  administrator_password        = random_password.postgres.result
  backup_retention_days         = 14
  tags                          = local.tags

  depends_on = [azurerm_private_dns_zone_virtual_network_link.postgres]
}

resource "azurerm_postgresql_flexible_server_database" "main" {
  name      = var.postgres_database
  server_id = azurerm_postgresql_flexible_server.main.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

# --- Key Vault and the External Secrets identity ---------------------------------------------

resource "azurerm_key_vault" "main" {
  name                       = "${substr(local.compact, 0, 10)}-${var.environment}-${random_string.suffix.result}"
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  soft_delete_retention_days = 90
  purge_protection_enabled   = var.environment == "prod"
  tags                       = local.tags
}

# Whoever runs Terraform writes the generated secrets.
resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_user_assigned_identity" "external_secrets" {
  name                = "${local.name}-external-secrets"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# The operator's Kubernetes service account may act as the identity above.
resource "azurerm_federated_identity_credential" "external_secrets" {
  name                = "external-secrets"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.external_secrets.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.main.oidc_issuer_url
  subject             = "system:serviceaccount:${var.external_secrets_namespace}:${var.external_secrets_service_account}"
}

# Read-only: the operator syncs secrets, it never writes them.
resource "azurerm_role_assignment" "external_secrets_reader" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.external_secrets.principal_id
}

resource "random_password" "django_secret_key" {
  length  = 50
  special = true
}

resource "random_password" "clickhouse" {
  length  = 32
  special = false
}

resource "random_password" "grafana_admin" {
  length  = 24
  special = false
}

# The Key Vault secrets that deploy/k8s/base/external-secrets.yaml reads, except the e-mail
# account (campaign-express-email-user, -password), which the operator sets by hand.
# campaign-express-redis-url serves an overlay that uses this Redis instead of deploy/redis;
# grafana-admin-password is for the monitoring stack's Secret grafana-admin.
locals {
  secrets = {
    "campaign-express-secret-key" = random_password.django_secret_key.result
    "campaign-express-database-url" = format(
      "postgresql://%s:%s@%s:5432/%s?sslmode=require",
      var.postgres_admin_login,
      random_password.postgres.result,
      azurerm_postgresql_flexible_server.main.fqdn,
      var.postgres_database,
    )
    "clickhouse-user"     = var.clickhouse_user
    "clickhouse-password" = random_password.clickhouse.result
    "campaign-express-clickhouse-url" = format(
      "clickhouse://%s:%s@clickhouse.campaign-express.svc:9000/campaign_express",
      var.clickhouse_user,
      random_password.clickhouse.result,
    )
    "campaign-express-redis-url" = format(
      "rediss://:%s@%s:%d/0",
      azurerm_redis_cache.main.primary_access_key,
      azurerm_redis_cache.main.hostname,
      azurerm_redis_cache.main.ssl_port,
    )
    "grafana-admin-password" = random_password.grafana_admin.result
  }
}

# Keyed by the literal names: for_each may not be derived from the sensitive values.
resource "azurerm_key_vault_secret" "platform" {
  for_each = toset([
    "campaign-express-secret-key",
    "campaign-express-database-url",
    "clickhouse-user",
    "clickhouse-password",
    "campaign-express-clickhouse-url",
    "campaign-express-redis-url",
    "grafana-admin-password",
  ])
  name         = each.value
  value        = local.secrets[each.value]
  key_vault_id = azurerm_key_vault.main.id
  content_type = "text/plain"

  depends_on = [azurerm_role_assignment.deployer_secrets_officer]
}
