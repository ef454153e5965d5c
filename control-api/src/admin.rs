//! Operator actions that run from the command line, not over HTTP.

use crate::auth::hash_password;
use crate::routes::accounts::{check_password, parse_email};
use crate::store::{NewUser, Role, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates an admin account, or promotes an existing account (its password unchanged).
pub async fn create_admin<S: Store>(
    db: &S,
    email: &str,
    password: &str,
    display_name: &str,
) -> Result<String, AdminError> {
    db.migrate().await?;
    let email = parse_email(email).map_err(|e| AdminError::Invalid(e.message))?;
    if let Some(u) = db.user_by_email(&email).await? {
        db.set_role(&u.id, Role::Admin).await?;
        return Ok(format!(
            "{email} is now an admin (existing account, password unchanged)"
        ));
    }
    check_password("password", password).map_err(|e| AdminError::Invalid(e.message))?;
    let password_hash = hash_password(password).map_err(AdminError::Invalid)?;
    db.create_user(NewUser {
        email: email.clone(),
        display_name: display_name.trim().to_owned(),
        password_hash,
        role: Role::Admin,
    })
    .await?;
    Ok(format!("admin account {email} created"))
}
