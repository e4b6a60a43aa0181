variable "subscription_id" {
  description = "Azure subscription to deploy into (null: the one the Azure CLI or ARM_SUBSCRIPTION_ID selects)."
  type        = string
  default     = null
}

variable "project_name" {
  description = "Resource naming prefix."
  type        = string
  default     = "campaign-express"
}

variable "environment" {
  description = "dev, staging or prod."
  type        = string
  default     = "dev"

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "primary_region" {
  description = "Azure region of every resource."
  type        = string
  default     = "eastus2"
}

variable "replica_regions" {
  description = "Regions the container registry replicates to (geo-replication)."
  type        = list(string)
  default     = ["centralus"]
}

variable "availability_zone" {
  description = "Zone of the ClickHouse disks and pool (PremiumV2 disks are zonal, and a disk attaches only in its zone)."
  type        = string
  default     = "1"
}

variable "kubernetes_version" {
  description = "AKS version."
  type        = string
  default     = "1.28.5"
}

variable "vnet_address_space" {
  description = "Address space of the virtual network."
  type        = string
  default     = "10.40.0.0/16"
}

variable "system_vm_size" {
  description = "System pool VM."
  type        = string
  default     = "Standard_D4s_v5"
}

variable "system_node_count" {
  description = "System pool nodes."
  type        = number
  default     = 3
}

variable "bidding_vm_size" {
  description = "Bidding pool VM."
  type        = string
  default     = "Standard_D16s_v5"
}

variable "bidding_min_count" {
  description = "Fewest bidding nodes (the autoscaler adds nodes as the bidder HPA adds pods)."
  type        = number
  default     = 10
}

variable "bidding_max_count" {
  description = "Most bidding nodes."
  type        = number
  default     = 40
}

variable "bidding_node_labels" {
  description = "Labels of the bidding pool; the production overlay schedules bidders on npu=xdna."
  type        = map(string)
  default     = { npu = "xdna" }
}

variable "clickhouse_vm_size" {
  description = "ClickHouse pool VM."
  type        = string
  default     = "Standard_L8s_v3"
}

variable "clickhouse_node_count" {
  description = "ClickHouse nodes, one server each; also the number of ClickHouse disks."
  type        = number
  default     = 2
}

variable "clickhouse_disk_size_gb" {
  description = "Size of each ClickHouse data disk (PremiumV2_LRS)."
  type        = number
  default     = 1024
}

variable "redis_capacity" {
  description = "Redis Premium size (1-5: P1-P5)."
  type        = number
  default     = 3
}

variable "redis_shard_count" {
  description = "Redis Cluster shards."
  type        = number
  default     = 6
}

variable "redis_maxmemory_policy" {
  description = "Eviction when Redis is full (profiles are a cache; budgets and caps are rebuilt from PostgreSQL)."
  type        = string
  default     = "allkeys-lru"
}

variable "postgres_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "postgres_sku_name" {
  description = "PostgreSQL flexible server SKU."
  type        = string
  default     = "GP_Standard_D4ds_v5"
}

variable "postgres_storage_mb" {
  description = "PostgreSQL storage in MB."
  type        = number
  default     = 131072
}

variable "postgres_database" {
  description = "Database the platform uses."
  type        = string
  default     = "campaign_express"
}

variable "postgres_admin_login" {
  description = "PostgreSQL administrator login (its password is generated and kept in Key Vault)."
  type        = string
  default     = "campaignexpress"
}

variable "log_retention_days" {
  description = "Log Analytics retention."
  type        = number
  default     = 30
}

variable "external_secrets_namespace" {
  description = "Namespace of the service account the External Secrets Operator reads Key Vault as."
  type        = string
  default     = "external-secrets"
}

variable "external_secrets_service_account" {
  description = "Service account the ClusterSecretStore signs in as (deploy/k8s/base/external-secrets.yaml)."
  type        = string
  default     = "external-secrets-azure"
}

variable "clickhouse_user" {
  description = "ClickHouse account of the platform (deploy/clickhouse reads it from clickhouse-credentials)."
  type        = string
  default     = "campaign_express"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
