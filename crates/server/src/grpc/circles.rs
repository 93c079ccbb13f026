//! `Circles`: circle and circle-chat administration (spec 4.3, 5.5.5). Chats are stored only;
//! the group-chat code creates and mirrors the rooms.

use super::{fail, group_not_found, internal, user_not_found, AdminApi};
use rand::Rng;
use snikket_rpc::snikket::admin::v1 as pb;
use snikket_store::{Circle, StoreError, DEFAULT_CIRCLE_ID};
use tonic::{Code, Request, Response, Status};

/// Longest circle or chat name, in bytes.
const MAX_NAME: usize = 256;

fn name_of(input: &str) -> Result<String, Status> {
    let name = input.trim();
    if name.is_empty() {
        return Err(fail(
            Code::InvalidArgument,
            "group-name-required",
            "a name is required",
        ));
    }
    if name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(fail(
            Code::InvalidArgument,
            "invalid-argument",
            "name is too long or contains control characters",
        ));
    }
    Ok(name.to_string())
}

fn protected() -> Status {
    fail(
        Code::FailedPrecondition,
        "default-circle-protected",
        "the main circle cannot be renamed or deleted",
    )
}

/// A random room localpart: 12 lowercase letters and digits (MUC localparts are case-folded).
fn new_room_localpart() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..12)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

impl AdminApi {
    async fn existing_circle(&self, id: &str) -> Result<Circle, Status> {
        self.store()
            .circle(id.trim())
            .await
            .map_err(internal)?
            .ok_or_else(group_not_found)
    }

    async fn circle_message(&self, circle: Circle) -> Result<pb::Circle, Status> {
        let members = self
            .store()
            .circle_members(&circle.circle_id)
            .await
            .map_err(internal)?;
        let chats = self
            .store()
            .circle_chats(&circle.circle_id)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|c| pb::CircleChat {
                id: c.room_jid.split('@').next().unwrap_or_default().to_string(),
                jid: c.room_jid,
                name: c.name,
            })
            .collect();
        Ok(pb::Circle {
            is_default: circle.circle_id == DEFAULT_CIRCLE_ID,
            id: circle.circle_id,
            name: circle.name,
            members,
            chats,
            created_at: circle.created_at,
        })
    }

    async fn circle_by_id(&self, id: &str) -> Result<pb::Circle, Status> {
        let circle = self.existing_circle(id).await?;
        self.circle_message(circle).await
    }
}

#[tonic::async_trait]
impl pb::circles_server::Circles for AdminApi {
    async fn create_circle(
        &self,
        request: Request<pb::CreateCircleRequest>,
    ) -> Result<Response<pb::Circle>, Status> {
        let caller = self.admin(&request).await?;
        let name = name_of(&request.get_ref().name)?;
        let circle = self.store().create_circle(&name).await.map_err(internal)?;
        tracing::info!(admin = %caller.username, circle = %circle.circle_id, "circle created");
        Ok(Response::new(self.circle_message(circle).await?))
    }

    async fn list_circles(
        &self,
        request: Request<pb::ListCirclesRequest>,
    ) -> Result<Response<pb::ListCirclesResponse>, Status> {
        self.admin(&request).await?;
        let mut all = self.store().circles().await.map_err(internal)?;
        all.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then_with(|| a.circle_id.cmp(&b.circle_id))
        });
        let mut circles = Vec::with_capacity(all.len());
        for c in all {
            circles.push(self.circle_message(c).await?);
        }
        Ok(Response::new(pb::ListCirclesResponse { circles }))
    }

    async fn get_circle(
        &self,
        request: Request<pb::GetCircleRequest>,
    ) -> Result<Response<pb::Circle>, Status> {
        self.admin(&request).await?;
        Ok(Response::new(
            self.circle_by_id(&request.get_ref().id).await?,
        ))
    }

    async fn rename_circle(
        &self,
        request: Request<pb::RenameCircleRequest>,
    ) -> Result<Response<pb::Circle>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let circle = self.existing_circle(&req.id).await?;
        if circle.circle_id == DEFAULT_CIRCLE_ID {
            return Err(protected());
        }
        let name = name_of(&req.name)?;
        if !self
            .store()
            .rename_circle(&circle.circle_id, &name)
            .await
            .map_err(internal)?
        {
            return Err(group_not_found());
        }
        tracing::info!(admin = %caller.username, circle = %circle.circle_id, "circle renamed");
        Ok(Response::new(self.circle_by_id(&circle.circle_id).await?))
    }

    async fn delete_circle(
        &self,
        request: Request<pb::DeleteCircleRequest>,
    ) -> Result<Response<pb::DeleteCircleResponse>, Status> {
        let caller = self.admin(&request).await?;
        let circle = self.existing_circle(&request.get_ref().id).await?;
        if circle.circle_id == DEFAULT_CIRCLE_ID {
            return Err(protected());
        }
        if !self
            .store()
            .delete_circle(&circle.circle_id)
            .await
            .map_err(internal)?
        {
            return Err(group_not_found());
        }
        tracing::info!(admin = %caller.username, circle = %circle.circle_id, "circle deleted");
        Ok(Response::new(pb::DeleteCircleResponse {}))
    }

    async fn add_circle_member(
        &self,
        request: Request<pb::AddCircleMemberRequest>,
    ) -> Result<Response<pb::Circle>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let circle = self.existing_circle(&req.id).await?;
        let username = self.localpart(&req.username)?;
        if self
            .store()
            .account(&username)
            .await
            .map_err(internal)?
            .is_none()
        {
            return Err(user_not_found());
        }
        self.store()
            .add_circle_member(&circle.circle_id, &username)
            .await
            .map_err(internal)?;
        tracing::info!(admin = %caller.username, circle = %circle.circle_id, user = %username, "circle member added");
        Ok(Response::new(self.circle_message(circle).await?))
    }

    async fn remove_circle_member(
        &self,
        request: Request<pb::RemoveCircleMemberRequest>,
    ) -> Result<Response<pb::Circle>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let circle = self.existing_circle(&req.id).await?;
        let username = self.localpart(&req.username)?;
        if !self
            .store()
            .remove_circle_member(&circle.circle_id, &username)
            .await
            .map_err(internal)?
        {
            return Err(fail(
                Code::NotFound,
                "user-not-found",
                "the user is not a member of this circle",
            ));
        }
        tracing::info!(admin = %caller.username, circle = %circle.circle_id, user = %username, "circle member removed");
        Ok(Response::new(self.circle_message(circle).await?))
    }

    async fn add_circle_chat(
        &self,
        request: Request<pb::AddCircleChatRequest>,
    ) -> Result<Response<pb::CircleChat>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let circle = self.existing_circle(&req.id).await?;
        let name = name_of(&req.name)?;
        let groups = self.config().groups_domain();
        for _ in 0..4 {
            let id = new_room_localpart();
            let jid = format!("{id}@{groups}");
            match self
                .store()
                .add_circle_chat(&circle.circle_id, &jid, &name)
                .await
            {
                Ok(chat) => {
                    tracing::info!(admin = %caller.username, circle = %circle.circle_id, room = %chat.room_jid, "circle chat added");
                    return Ok(Response::new(pb::CircleChat {
                        id,
                        jid: chat.room_jid,
                        name: chat.name,
                    }));
                }
                Err(StoreError::NotFound { .. }) => return Err(group_not_found()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(internal("could not allocate a room name"))
    }

    async fn remove_circle_chat(
        &self,
        request: Request<pb::RemoveCircleChatRequest>,
    ) -> Result<Response<pb::Circle>, Status> {
        let caller = self.admin(&request).await?;
        let req = request.into_inner();
        let circle = self.existing_circle(&req.id).await?;
        let chat = req.chat_id.trim().to_lowercase();
        let jid = if chat.contains('@') {
            chat
        } else {
            format!("{chat}@{}", self.config().groups_domain())
        };
        if !self
            .store()
            .remove_circle_chat(&circle.circle_id, &jid)
            .await
            .map_err(internal)?
        {
            return Err(fail(
                Code::NotFound,
                "chat-not-found",
                "no such chat in this circle",
            ));
        }
        if let Ok(state) = self.live() {
            crate::muc::circle_chat_removed(state, &circle.circle_id, &jid).await;
        }
        tracing::info!(admin = %caller.username, circle = %circle.circle_id, room = %jid, "circle chat removed");
        Ok(Response::new(self.circle_message(circle).await?))
    }
}
