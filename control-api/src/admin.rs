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

/// Creates an admin account (its email counts as verified: the operator vouches for
/// it), or promotes an existing account whose owner verified its email (its password
/// unchanged). An unverified account is never promoted: anyone may have registered
/// the address, hoping the operator would.
pub async fn create_admin<S: Store>(
    db: &S,
    email: &str,
    password: &str,
    display_name: &str,
) -> Result<String, AdminError> {
    db.migrate().await?;
    let email = parse_email(email).map_err(|e| AdminError::Invalid(e.message))?;
    if let Some(u) = db.user_by_email(&email).await? {
        if u.email_verified_at.is_none() {
            return Err(AdminError::Invalid(format!(
                "{email} has an account that never verified its email, so whoever registered it may not hold that mailbox; it is not made admin. Its owner opens the link of the verification mail (`streamcore admin mail --to {email}` shows it) or the account is removed, then run this again"
            )));
        }
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
        email_verified: true,
    })
    .await?;
    Ok(format!("admin account {email} created"))
}
