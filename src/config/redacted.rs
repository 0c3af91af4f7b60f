//! `droid2api check-config`: the settings printed with every secret masked.

use std::fmt;

use super::Settings;
use crate::secret::Secret;

/// Prints settings with every secret masked (`droid2api check-config`).
pub struct Redacted<'a>(pub &'a Settings);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let opt = |o: &Option<Secret>| {
            o.as_ref()
                .map(Secret::masked)
                .unwrap_or_else(|| "(unset)".into())
        };
        writeln!(f, "listen:              {}", s.listen_addr())?;
        writeln!(f, "data dir:            {}", s.data_dir.display())?;
        writeln!(
            f,
            "log dir:             {} (file logs {})",
            s.log_dir.display(),
            if s.production { "on" } else { "off" }
        )?;
        writeln!(f, "log level:           {}", s.log_level)?;
        match &s.admin_key_disabled {
            Some(reason) => writeln!(f, "ADMIN_ACCESS_KEY:    (refused) {reason}")?,
            None => writeln!(f, "ADMIN_ACCESS_KEY:    {}", opt(&s.admin_access_key))?,
        }
        writeln!(f, "API_ACCESS_KEY:      {}", opt(&s.api_access_key))?;
        writeln!(f, "FACTORY_API_KEY:     {}", opt(&s.factory_api_key))?;
        writeln!(f, "DROID_REFRESH_KEY:   {}", opt(&s.droid_refresh_key))?;
        writeln!(
            f,
            "anthropic endpoint:  {}",
            crate::secret::mask_userinfo(&s.endpoints.anthropic)
        )?;
        writeln!(
            f,
            "openai endpoint:     {}",
            crate::secret::mask_userinfo(&s.endpoints.openai)
        )?;
        writeln!(
            f,
            "common endpoint:     {}",
            crate::secret::mask_userinfo(&s.endpoints.common)
        )?;
        writeln!(
            f,
            "workos:              {}",
            crate::secret::mask_userinfo(&s.workos_base_url)
        )?;
        writeln!(f, "user agent:          {}", s.user_agent)?;
        writeln!(f, "system prompt:       {:?}", s.system_prompt)?;
        writeln!(
            f,
            "reasoning budgets:   low {} / medium {} / high {}",
            s.reasoning_budgets.low, s.reasoning_budgets.medium, s.reasoning_budgets.high
        )?;
        writeln!(
            f,
            "proxies:             {} in rotation{}",
            s.proxies.rotation.len(),
            s.proxies
                .https_proxy
                .as_ref()
                .map(|_| ", HTTPS_PROXY set")
                .unwrap_or("")
        )?;
        writeln!(
            f,
            "timezone:            {}",
            s.timezone.as_deref().unwrap_or("(machine)")
        )?;
        writeln!(
            f,
            "key pool:            {:?} (pinned by env: {:?})",
            s.key_pool, s.pinned
        )?;
        writeln!(f, "timing:              {:?}", s.timing)?;
        writeln!(
            f,
            "limits:              {} connections, {} MiB of request bodies in memory, {} JSON values per request",
            s.limits.max_connections, s.limits.max_inflight_body_mb, s.limits.max_json_values
        )?;
        writeln!(
            f,
            "cors origins:        {}",
            match &s.cors_origins {
                Some(list) if list.is_empty() => "(none)".to_string(),
                Some(list) => list.join(", "),
                None => "(default: * with client authentication on, none without)".to_string(),
            }
        )?;
        writeln!(
            f,
            "trust proxy:         {}",
            if s.trust_proxy {
                "yes (client address from X-Forwarded-For's last hop)"
            } else {
                "no (client address = socket peer)"
            }
        )?;
        writeln!(
            f,
            "usage:               sync every {} min, batch {}, keep {} days",
            s.sync_interval_minutes, s.batch_size, s.data_retention_days
        )?;
        writeln!(
            f,
            "redis:               {}",
            if s.redis_url.is_some() {
                "set (not used yet: embedded store)"
            } else {
                "unset"
            }
        )?;
        writeln!(f, "models:")?;
        for m in &s.models {
            writeln!(
                f,
                "  {:<28} {:<9} reasoning {:<6} provider {}",
                m.id,
                m.kind.as_str(),
                m.reasoning.as_str(),
                m.provider()
            )?;
        }
        for (from, to) in &s.model_redirects {
            writeln!(f, "  redirect {from} -> {to}")?;
        }
        Ok(())
    }
}
