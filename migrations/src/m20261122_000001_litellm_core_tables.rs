//! LiteLLM's core tables: budgets, organizations, teams, users, memberships, virtual keys,
//! end users, models and spend logs, column for column as in LiteLLM's schema.prisma.

use sea_orm_migration::prelude::*;

use crate::schema::{Index, Table, create_index, create_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let connection = manager.get_connection();
        // Referenced tables come first, so foreign keys can be declared inline.
        for table in TABLES {
            connection.execute_unprepared(&create_table(backend, table)).await?;
        }
        for index in INDEXES {
            connection.execute_unprepared(&create_index(index)).await?;
        }
        Ok(())
    }
}

pub const TABLES: &[Table] = &[
    Table {
        name: "LiteLLM_BudgetTable",
        columns: "
            budget_id text!
            max_budget float
            soft_budget float
            max_parallel_requests int
            tpm_limit bigint
            rpm_limit bigint
            tpd_limit bigint
            model_max_budget json
            budget_duration text
            budget_reset_at timestamp
            allowed_models text[] =[]
            temp_budget_increase float
            temp_budget_expiry timestamp
            created_at timestamp! =now
            created_by text!
            updated_at timestamp! =now
            updated_by text!",
        primary_key: &["budget_id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_ProxyModelTable",
        columns: "
            model_id text!
            model_name text!
            litellm_params json!
            model_info json
            blocked bool! =false
            created_at timestamp! =now
            created_by text!
            updated_at timestamp! =now
            updated_by text!",
        primary_key: &["model_id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_OrganizationTable",
        columns: "
            organization_id text!
            organization_alias text!
            budget_id text!
            metadata json! ={}
            models text[]
            spend float! =0
            model_spend json! ={}
            object_permission_id text
            created_at timestamp! =now
            created_by text!
            updated_at timestamp! =now
            updated_by text!",
        primary_key: &["organization_id"],
        foreign_keys: &[("budget_id", "LiteLLM_BudgetTable", "budget_id")],
    },
    Table {
        name: "LiteLLM_TeamTable",
        columns: "
            team_id text!
            team_alias text
            organization_id text
            object_permission_id text
            admins text[]
            members text[]
            members_with_roles json! ={}
            metadata json! ={}
            max_budget float
            soft_budget float
            spend float! =0
            models text[]
            max_parallel_requests int
            tpm_limit bigint
            rpm_limit bigint
            tpd_limit bigint
            budget_duration text
            budget_reset_at timestamp
            blocked bool! =false
            created_at timestamp! =now
            updated_at timestamp! =now
            model_spend json! ={}
            model_max_budget json! ={}
            router_settings json ={}
            team_member_permissions text[] =[]
            access_group_ids text[] =[]
            policies text[] =[]
            default_team_member_models text[] =[]
            budget_limits json
            model_id int
            allow_team_guardrail_config bool! =false",
        primary_key: &["team_id"],
        foreign_keys: &[("organization_id", "LiteLLM_OrganizationTable", "organization_id")],
    },
    Table {
        name: "LiteLLM_UserTable",
        columns: "
            user_id text!
            user_alias text
            team_id text
            sso_user_id text
            organization_id text
            object_permission_id text
            password text
            password_reset_required bool
            last_breach_check_at timestamp
            teams text[] =[]
            user_role text
            max_budget float
            spend float! =0
            user_email text
            models text[]
            metadata json! ={}
            max_parallel_requests int
            tpm_limit bigint
            rpm_limit bigint
            budget_duration text
            budget_reset_at timestamp
            allowed_cache_controls text[] =[]
            policies text[] =[]
            model_spend json! ={}
            model_max_budget json! ={}
            created_at timestamp =now
            updated_at timestamp =now",
        primary_key: &["user_id"],
        foreign_keys: &[("organization_id", "LiteLLM_OrganizationTable", "organization_id")],
    },
    Table {
        name: "LiteLLM_VerificationToken",
        columns: "
            token text!
            key_name text
            key_alias text
            soft_budget_cooldown bool! =false
            spend float! =0
            total_spend float! =0
            expires timestamp
            models text[]
            aliases json! ={}
            config json! ={}
            router_settings json ={}
            user_id text
            team_id text
            agent_id text
            project_id text
            permissions json! ={}
            max_parallel_requests int
            metadata json! ={}
            blocked bool
            tpm_limit bigint
            rpm_limit bigint
            tpd_limit bigint
            max_budget float
            budget_duration text
            budget_reset_at timestamp
            allowed_cache_controls text[] =[]
            allowed_routes text[] =[]
            key_type text
            policies text[] =[]
            access_group_ids text[] =[]
            model_spend json! ={}
            model_max_budget json! ={}
            budget_fallbacks json! ={}
            budget_id text
            organization_id text
            object_permission_id text
            created_at timestamp =now
            created_by text
            updated_at timestamp =now
            updated_by text
            settings_updated_at timestamp
            last_active timestamp
            rotation_count int =0
            auto_rotate bool =false
            rotation_interval text
            last_rotation_at timestamp
            key_rotation_at timestamp
            budget_limits json",
        primary_key: &["token"],
        foreign_keys: &[
            ("budget_id", "LiteLLM_BudgetTable", "budget_id"),
            ("organization_id", "LiteLLM_OrganizationTable", "organization_id"),
        ],
    },
    Table {
        name: "LiteLLM_EndUserTable",
        columns: "
            user_id text!
            alias text
            spend float! =0
            allowed_model_region text
            default_model text
            models text[] =[]
            budget_id text
            object_permission_id text
            blocked bool! =false",
        primary_key: &["user_id"],
        foreign_keys: &[("budget_id", "LiteLLM_BudgetTable", "budget_id")],
    },
    Table {
        name: "LiteLLM_SpendLogs",
        columns: "
            request_id text!
            call_type text!
            api_key text! =''
            spend float! =0
            total_tokens int! =0
            prompt_tokens int! =0
            completion_tokens int! =0
            startTime timestamp!
            endTime timestamp!
            request_duration_ms int
            completionStartTime timestamp
            model text! =''
            model_id text =''
            model_group text =''
            custom_llm_provider text =''
            api_base text =''
            user text =''
            metadata json ={}
            cache_hit text =''
            cache_key text =''
            request_tags json =[]
            team_id text
            organization_id text
            end_user text
            requester_ip_address text
            messages json ={}
            response json ={}
            session_id text
            status text
            mcp_namespaced_tool_name text
            billing_agent_id text
            agent_id text
            proxy_server_request json ={}
            litellm_call_id text
            created_at timestamp! =now
            updated_at timestamp! =now",
        primary_key: &["request_id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_TeamMembership",
        columns: "
            user_id text!
            team_id text!
            spend float! =0
            total_spend float! =0
            budget_id text",
        primary_key: &["user_id", "team_id"],
        foreign_keys: &[("budget_id", "LiteLLM_BudgetTable", "budget_id")],
    },
    Table {
        name: "LiteLLM_OrganizationMembership",
        columns: "
            user_id text!
            organization_id text!
            user_role text
            spend float =0
            budget_id text
            created_at timestamp =now
            updated_at timestamp =now",
        primary_key: &["user_id", "organization_id"],
        foreign_keys: &[
            ("user_id", "LiteLLM_UserTable", "user_id"),
            ("organization_id", "LiteLLM_OrganizationTable", "organization_id"),
            ("budget_id", "LiteLLM_BudgetTable", "budget_id"),
        ],
    },
];

const fn index(name: &'static str, table: &'static str, columns: &'static [&'static str]) -> Index {
    Index { name, table, columns, unique: false }
}

const INDEXES: &[Index] = &[
    Index { unique: true, ..index("LiteLLM_TeamTable_model_id_key", "LiteLLM_TeamTable", &["model_id"]) },
    index("LiteLLM_TeamTable_organization_id_idx", "LiteLLM_TeamTable", &["organization_id"]),
    index("LiteLLM_TeamTable_team_alias_idx", "LiteLLM_TeamTable", &["team_alias"]),
    index("LiteLLM_TeamTable_created_at_idx", "LiteLLM_TeamTable", &["created_at"]),
    Index {
        unique: true,
        ..index("LiteLLM_UserTable_sso_user_id_key", "LiteLLM_UserTable", &["sso_user_id"])
    },
    index(
        "LiteLLM_VerificationToken_user_id_team_id_idx",
        "LiteLLM_VerificationToken",
        &["user_id", "team_id"],
    ),
    index("LiteLLM_VerificationToken_team_id_idx", "LiteLLM_VerificationToken", &["team_id"]),
    index(
        "LiteLLM_VerificationToken_budget_reset_at_expires_idx",
        "LiteLLM_VerificationToken",
        &["budget_reset_at", "expires"],
    ),
    index("LiteLLM_SpendLogs_startTime_idx", "LiteLLM_SpendLogs", &["startTime"]),
    index("LiteLLM_SpendLogs_startTime_request_id_idx", "LiteLLM_SpendLogs", &["startTime", "request_id"]),
    index("LiteLLM_SpendLogs_end_user_idx", "LiteLLM_SpendLogs", &["end_user"]),
    index("LiteLLM_SpendLogs_session_id_idx", "LiteLLM_SpendLogs", &["session_id"]),
    index("LiteLLM_SpendLogs_litellm_call_id_idx", "LiteLLM_SpendLogs", &["litellm_call_id"]),
    index("LiteLLM_SpendLogs_api_key_startTime_idx", "LiteLLM_SpendLogs", &["api_key", "startTime"]),
];
